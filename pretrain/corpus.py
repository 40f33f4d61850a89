"""The embedded default corpus: a small, seeded generator of a Tianchi-shaped anonymised news corpus.

No real data ships with minibert, yet `make pretrain` must run on a fresh clone and show that masked-language
modelling (MLM, 掩码语言模型) learns something. This file writes a TSV with header `label\\ttext` whose `text` is
space-separated integer IDs, exactly like the Tianchi 新闻文本分类 `train_set.csv`, from a generative story that
has real structure, so a model can beat the unigram baseline by a wide margin within a few minutes of CPU training.

The generative story (every random draw comes from one seeded `numpy.random.Generator`):

1. **Vocabulary (词表).** `num_words` content IDs drawn from Tianchi's range 0..7549, plus three "punctuation" IDs
   that reuse Tianchi's most frequent ones: 3750 (comma-like, ~5% of tokens), 648 (sentence end, ~2%) and 900
   (other sentence end, ~1.4%). The first `num_particles` content IDs are "particles" (function words, like 的/了).
2. **Phrases (local structure).** `num_phrases` fixed phrases of 4-8 content IDs. Every content ID appears in at
   least one phrase and a few spare slots take Zipf-drawn IDs, so most IDs live in one phrase (predictable from
   their neighbours) and some recur in several (ambiguous, like real function words). Each phrase has habits: a
   preferred particle that usually precedes it, whether a comma follows it, which sentence end closes a sentence
   after it, and two successor phrases it is often followed by (a first-order Markov chain over phrases). All of
   this makes neighbours predict each other: the local n-gram signal an MLM picks up first. Phrase frequencies
   are steeply Zipfian (exponent 1.2), so a small head of phrases recurs constantly: a BERT-mini learns those
   within a few hundred steps, which is what lets the 10-minute `make pretrain` end clearly above the unigram
   baseline (a flatter corpus with the same structure stays at the baseline for that long).
3. **Topics and classes (document signal).** Each of `num_topics` topics favours its own random subset of
   phrases with Zipf weights; each of the 14 classes has two "home" topics. A document draws its topic mixture
   from a Dirichlet centred on its class's home topics, each sentence draws one topic from that mixture, and each
   phrase comes from the sentence's topic or from a shared Zipfian "general" distribution. Topics overlap and
   every class can use every topic, so labels are learnable from the bag of phrases but no single ID gives the
   label away.
4. **Classes and lengths.** Class priors follow the imbalance of Tianchi's 14 labels (largest ≈ 40× smallest);
   document lengths are log-normal (median ≈ 380 tokens, a few documents past 5,000, capped at 12,000).

Dimension legend: D documents, S phrase slots, K topics, P phrases.
Run: `python -m pretrain.corpus --out data/default_corpus.tsv --docs 4000 --seed 0 [--labelled-dir DIR]`.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.training.io import atomic_write_text

PUNCTUATION_IDS = (3750, 648, 900)  # comma-like, sentence end, other sentence end (Tianchi's top-3 IDs)
# Approximate label counts of the full Tianchi train_set (200k rows): the imbalance we imitate.
TIANCHI_CLASS_COUNTS = (38918, 36945, 31425, 22133, 15016, 12232, 9985, 8841, 7847, 5878, 4920, 3131, 1821, 908)


@dataclass(frozen=True)
class CorpusSpec:
    """Knobs of the generative story (see module docstring). The defaults give the default corpus."""
    num_words: int = 7000          # content IDs (the vocab is these plus 3 punctuation IDs)
    num_particles: int = 30        # function-word IDs inserted before phrases
    num_phrases: int = 1200        # fixed multi-token phrases: few and long, so each recurs often
    min_phrase_length: int = 4
    max_phrase_length: int = 8
    num_topics: int = 28           # two home topics per class
    phrases_per_topic: int = 250   # support of each topic's phrase distribution
    general_rate: float = 0.5      # P(phrase comes from the shared distribution, not the sentence's topic)
    follow_rate: float = 0.5       # P(phrase is one of its predecessor's two successors)
    particle_rate: float = 0.2     # P(a particle precedes a phrase)
    particle_loyalty: float = 0.9  # P(the particle is the phrase's preferred one)
    comma_rate: float = 0.45       # share of phrases that habitually take a comma when not sentence-final
    sentence_end_rate: float = 0.25  # P(a phrase slot starts a new sentence) → ~4 phrases per sentence
    median_length: int = 380       # median document length in tokens
    length_sigma: float = 0.9      # log-normal sigma: long tail, a few documents > 5,000 tokens
    max_length: int = 12000
    zipf_exponent: float = 1.2     # phrase frequencies (general and per topic): a steep head learns fast
    word_zipf_exponent: float = 0.8  # which words fill the spare phrase slots (softer than the phrase Zipf)


def _zipf_weights(n, exponent):
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


class CorpusWorld:
    """The fixed "language" (vocab, phrases, topics, classes) that every document of one seed is drawn from."""

    def __init__(self, spec, rng):
        self.spec = spec
        allowed = np.setdiff1d(np.arange(7550), PUNCTUATION_IDS)
        self.word_ids = rng.choice(allowed, size=spec.num_words, replace=False)  # [num_words], rank order
        self.particles = np.arange(spec.num_particles)                          # indices into word_ids
        content = np.arange(spec.num_particles, spec.num_words)                 # phrase words
        # Phrase inventory: each content word at least once, the rest Zipf-distributed (frequent words recur).
        lengths = rng.integers(spec.min_phrase_length, spec.max_phrase_length + 1, size=spec.num_phrases)  # [P]
        extra = lengths.sum() - len(content)
        if extra < 0:
            raise ValueError(f"CorpusSpec: num_phrases={spec.num_phrases} too few to hold "
                             f"{len(content)} content words; raise num_phrases")
        zipf = _zipf_weights(len(content), spec.word_zipf_exponent)
        slots = np.concatenate([content, rng.choice(content, size=extra, p=zipf)])
        self.phrase_words = rng.permutation(slots)                              # flat [sum of lengths]
        self.phrase_lengths = lengths                                           # [P]
        self.phrase_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])     # [P]
        self.successors = rng.integers(0, spec.num_phrases, size=(spec.num_phrases, 2))  # [P,2]
        # Punctuation habits: whether a phrase takes a comma, and which sentence end follows it.
        self.takes_comma = rng.random(spec.num_phrases) < spec.comma_rate                 # [P]
        self.end_mark = np.where(rng.random(spec.num_phrases) < 0.6, PUNCTUATION_IDS[1], PUNCTUATION_IDS[2])
        self.preferred_particle = rng.choice(self.particles, size=spec.num_phrases,
                                             p=_zipf_weights(spec.num_particles, 1.0))   # [P]
        # Phrase distributions as CDFs (inverse-CDF sampling is vectorised with searchsorted).
        general = _zipf_weights(spec.num_phrases, spec.zipf_exponent)[rng.permutation(spec.num_phrases)]
        self.general_cdf = np.cumsum(general)                                   # [P]
        topics = np.zeros((spec.num_topics, spec.num_phrases))                  # [K,P]
        for topic in range(spec.num_topics):
            support = rng.choice(spec.num_phrases, size=spec.phrases_per_topic, replace=False)
            topics[topic, support] = _zipf_weights(spec.phrases_per_topic, spec.zipf_exponent)
        self.topic_cdf = np.cumsum(topics, axis=1)                              # [K,P], rows end at 1
        # Two home topics per class; a document's Dirichlet mixture is centred on them.
        num_classes = len(TIANCHI_CLASS_COUNTS)
        home = rng.permutation(spec.num_topics)[: 2 * num_classes].reshape(num_classes, 2)
        self.class_alpha = np.full((num_classes, spec.num_topics), 0.15)        # [14,K]
        self.class_alpha[np.arange(num_classes)[:, None], home] = 1.5
        self.class_prior = np.asarray(TIANCHI_CLASS_COUNTS, float) / sum(TIANCHI_CLASS_COUNTS)

    def sample_documents(self, num_docs, rng):
        """Draws `num_docs` labelled documents.

        Returns:
            labels: int64 [D]; docs: list of D int64 arrays of token IDs.
        """
        spec = self.spec
        labels = rng.choice(len(self.class_prior), size=num_docs, p=self.class_prior)      # [D]
        lengths = np.exp(rng.normal(np.log(spec.median_length), spec.length_sigma, num_docs))
        lengths = np.clip(lengths.astype(np.int64), 8, spec.max_length)                   # [D]
        mixtures = np.stack([rng.dirichlet(self.class_alpha[c]) for c in labels])         # [D,K]
        # Phrase slots: ~5 tokens each, so 1 slot per 3.5 tokens over-generates; we truncate later.
        slots_per_doc = lengths // 3 + 4                                                  # [D]
        slot_doc = np.repeat(np.arange(num_docs), slots_per_doc)                          # [S]
        num_slots = len(slot_doc)
        first_in_doc = np.zeros(num_slots, bool)
        first_in_doc[np.concatenate([[0], np.cumsum(slots_per_doc)[:-1]])] = True
        starts_sentence = first_in_doc | (rng.random(num_slots) < spec.sentence_end_rate)  # [S]
        sentence_id = np.cumsum(starts_sentence) - 1                                       # [S]
        # One topic per sentence, drawn from its document's mixture (vectorised inverse CDF).
        sentence_doc = slot_doc[starts_sentence]
        mixture_cdf = np.cumsum(mixtures[sentence_doc], axis=1)                           # [sentences,K]
        draw = rng.random(len(sentence_doc))[:, None]
        sentence_topic = np.minimum((draw > mixture_cdf).sum(1), spec.num_topics - 1)
        slot_topic = sentence_topic[sentence_id]                                          # [S]
        # A fresh phrase per slot, from the general or the topic distribution. Offsetting each topic's CDF by
        # its row number makes the flattened [K*P] array monotonic, so one searchsorted serves every topic.
        from_general = np.searchsorted(self.general_cdf, rng.random(num_slots) * self.general_cdf[-1])
        offset_cdf = (self.topic_cdf + np.arange(spec.num_topics)[:, None]).ravel()
        flat = np.searchsorted(offset_cdf, slot_topic + rng.random(num_slots) * 0.999999)
        from_topic = flat - slot_topic * spec.num_phrases
        use_general = rng.random(num_slots) < spec.general_rate
        fresh = np.minimum(np.where(use_general, from_general, from_topic), spec.num_phrases - 1)
        # Markov chain over phrases: a "follow" slot takes a successor of the previous slot's phrase. Solved by
        # fixed-point iteration, vectorised; it converges in (longest follow chain) rounds, about 15.
        follows = (rng.random(num_slots) < spec.follow_rate) & ~starts_sentence
        choice = rng.integers(0, 2, size=num_slots)
        phrases = fresh.copy()
        while True:
            chained = np.where(follows, self.successors[np.roll(phrases, 1), choice], fresh)
            if np.array_equal(chained, phrases):
                break
            phrases = chained                                                             # [S]
        tokens, token_slot = self._expand(phrases, starts_sentence, rng)
        # Cut the slot stream into documents and truncate each to its drawn length.
        token_doc = slot_doc[token_slot]
        doc_start = np.searchsorted(token_doc, np.arange(num_docs))
        position = np.arange(len(tokens)) - doc_start[token_doc]
        keep = position < lengths[token_doc]
        tokens, token_doc = tokens[keep], token_doc[keep]
        bounds = np.searchsorted(token_doc, np.arange(num_docs + 1))
        return labels, [tokens[bounds[d]:bounds[d + 1]] for d in range(num_docs)]

    def _expand(self, phrases, starts_sentence, rng):
        """Turns phrase slots into token IDs: [particle] phrase words [comma] [sentence end]."""
        spec = self.spec
        num_slots = len(phrases)
        ends_sentence = np.append(starts_sentence[1:], True)                              # [S]
        particle = rng.random(num_slots) < spec.particle_rate
        comma = ~ends_sentence & self.takes_comma[phrases]
        length = self.phrase_lengths[phrases]
        counts = particle + length + comma + ends_sentence                                # tokens per slot
        slot_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        tokens = np.empty(counts.sum(), np.int64)
        token_slot = np.repeat(np.arange(num_slots), counts)
        # Particles: usually the phrase's preferred one, else any (Zipf over particles).
        random_particle = rng.choice(self.particles, size=num_slots, p=_zipf_weights(spec.num_particles, 1.0))
        loyal = rng.random(num_slots) < spec.particle_loyalty
        chosen = np.where(loyal, self.preferred_particle[phrases], random_particle)
        tokens[slot_start[particle]] = self.word_ids[chosen[particle]]
        # Phrase words: word j of slot i goes to slot_start[i] + particle[i] + j.
        word_slot = np.repeat(np.arange(num_slots), length)
        within = np.arange(len(word_slot)) - np.repeat(np.cumsum(length) - length, length)
        tokens[slot_start[word_slot] + particle[word_slot] + within] = \
            self.word_ids[self.phrase_words[self.phrase_starts[phrases[word_slot]] + within]]
        after = slot_start + particle + length
        tokens[after[comma]] = PUNCTUATION_IDS[0]
        tokens[(after + comma)[ends_sentence]] = self.end_mark[phrases[ends_sentence]]
        return tokens, token_slot


def write_tsv(path, labels, docs):
    """Writes `label\ttext` rows atomically (minibert.training.io: temp file, then os.replace)."""
    id_text = [str(i) for i in range(7550)]  # int→str once, not per token
    rows = [f"{label}\t{' '.join([id_text[t] for t in doc.tolist()])}\n" for label, doc in zip(labels.tolist(), docs)]
    atomic_write_text(path, "label\ttext\n" + "".join(rows))


def generate_corpus(out, num_docs=4000, seed=0, labelled_dir=None, labelled_docs=2000, spec=CorpusSpec()):
    """Writes the pretraining corpus and, optionally, a fine-tuning split drawn from the same world.

    Args:
        out: TSV path for the pretraining corpus (`label\\ttext`).
        num_docs: documents in the pretraining corpus.
        seed: fixes the world and every document; same seed → byte-identical files.
        labelled_dir: if given, writes `train.tsv` (90%) and `dev.tsv` (10%) of `labelled_docs` fresh
            documents there: same world, documents disjoint from the pretraining corpus.
    Returns:
        (labels [D], docs) of the pretraining corpus.
    """
    if num_docs < 1:
        raise ValueError(f"--docs: got {num_docs}, need at least 1 document; pass e.g. --docs 4000")
    if labelled_dir is not None and labelled_docs < 10:
        raise ValueError(f"--labelled-docs: got {labelled_docs}, need at least 10 for a train/dev split; "
                         "pass e.g. --labelled-docs 2000")
    world = CorpusWorld(spec, np.random.default_rng([seed, 0]))
    labels, docs = world.sample_documents(num_docs, np.random.default_rng([seed, 1]))
    write_tsv(out, labels, docs)
    if labelled_dir is not None:
        ft_labels, ft_docs = world.sample_documents(labelled_docs, np.random.default_rng([seed, 2]))
        cut = labelled_docs * 9 // 10
        write_tsv(Path(labelled_dir) / "train.tsv", ft_labels[:cut], ft_docs[:cut])
        write_tsv(Path(labelled_dir) / "dev.tsv", ft_labels[cut:], ft_docs[cut:])
    return labels, docs


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the embedded default Tianchi-shaped corpus.")
    parser.add_argument("--out", default="data/default_corpus.tsv")
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labelled-dir", default=None, help="also write train.tsv/dev.tsv for fine-tuning")
    parser.add_argument("--labelled-docs", type=int, default=2000)
    args = parser.parse_args(argv)
    try:
        labels, docs = generate_corpus(args.out, args.docs, args.seed, args.labelled_dir, args.labelled_docs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lengths = np.array([len(d) for d in docs])
    print(f"wrote {args.out}: {len(docs)} documents, {lengths.sum():,} tokens, "
          f"median length {int(np.median(lengths))}, max {lengths.max()}, "
          f"class counts {np.bincount(labels, minlength=14).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
