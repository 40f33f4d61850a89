"""Benchmarks (`make bench`): minibert's training speed against Hugging Face transformers. Not part of the library."""
