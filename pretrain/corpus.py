"""The embedded default corpus: a seeded toy LANGUAGE, written as a Tianchi-shaped anonymised corpus.

No real data ships with minibert (no text here is real, so there is no licence question), yet `make pretrain`
must run on a fresh clone and show what masked-language modelling (MLM, 掩码语言模型) learns. The previous
generator was so templated that two neighbours determined 97% of the masked tokens; this one is built to behave
like real text: two neighbours determine only a part of a word (the bidirectional bigram baseline scores ~0.3, as
on real corpora), wider context measurably helps, and document labels depend on content spread over the document.

The language (every draw comes from seeded generators; same seed → byte-identical files):

1. **Words (词表).** Pronounceable pseudo-words ("kelomi", "ta") so that a learner can read fill-mask output; each
   has an integer ID (the corpus is written as IDs, like Tianchi) and `<corpus>.words.tsv` maps ID → word.
   Parts of speech: nouns (each with a grammatical gender 0-2), verbs, adjectives, prepositions, conjunctions,
   determiners (a definite and an indefinite one per gender), set-phrase words and three punctuation marks.
   `--synonyms N` (a variant, not the default) gives each noun, verb and adjective N interchangeable forms.
2. **Sentences.** Clause = NP VERB NP [PREP NP], NP = DETERMINER [ADJECTIVE] NOUN; clauses join with ", CONJ" and
   end with "." or "?". The determiner AGREES with the noun's gender, whether or not an adjective stands
   between them (a dependency over 2 tokens); each noun has favourite adjectives and verbs, each verb favourite
   objects, which sit 2-3 tokens after it. Favourites come from a topic of their head word, so what a word
   predicts locally also says which topic it belongs to (as in real text). 80% of sentences open with one of
   300 fixed 5-word set phrases (like 成语) built from 40 words: a word's neighbours are shared by many phrases,
   two words on each side name the phrase. Both are what a ±2-token context sees and a bigram does not.
3. **Topics and classes.** Each of 28 topics favours its own nouns, verbs and adjectives (Zipf weights); each of
   the 14 classes has two home topics. A document draws a topic mixture centred on its class's home topics, every
   SENTENCE draws its topic from that mixture, so the label is spread over the whole document and no single word
   gives it away. Class priors follow Tianchi's imbalance; lengths are log-normal (median ≈ 250 tokens).

Dimension legend: D documents, K topics, C classes.
Run: `python -m pretrain.corpus --out data/default_corpus.tsv --docs 4000 --seed 0 [--labelled-dir DIR] [--synonyms N]`.
"""
import argparse
import bisect
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.training.io import atomic_write_text

# Approximate label counts of the full Tianchi train_set (200k rows): the imbalance we imitate.
TIANCHI_CLASS_COUNTS = (38918, 36945, 31425, 22133, 15016, 12232, 9985, 8841, 7847, 5878, 4920, 3131, 1821, 908)
CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
PUNCTUATION = ("，", "。", "？")  # written as IDs like every word; the words table shows them as Chinese marks


@dataclass(frozen=True)
class CorpusSpec:
    """Knobs of the language (see module docstring). The defaults give the default corpus."""
    num_nouns: int = 1500
    num_verbs: int = 600
    num_adjectives: int = 400
    num_prepositions: int = 8
    num_conjunctions: int = 4
    num_genders: int = 3            # each with a definite and an indefinite determiner
    num_set_words: int = 40         # the words set phrases are built from
    num_set_phrases: int = 300      # fixed 4-word expressions (like 成语 chengyu) opening a sentence
    set_phrase_length: int = 5
    set_phrase_rate: float = 0.8    # P(a sentence opens with a set phrase and a comma)
    num_topics: int = 28            # two home topics per class
    topic_support: int = 120        # nouns per topic (verbs and adjectives: half of it)
    topic_rate: float = 0.7         # P(a free word choice comes from the sentence's topic, else the whole lexicon)
    favourite_rate: float = 0.5     # P(an adjective / verb / object is a favourite of its noun / verb)
    num_favourites: int = 4
    adjective_rate: float = 0.4     # P(an NP has an adjective)
    prepositional_rate: float = 0.4  # P(a clause ends with PREP NP)
    conjunction_rate: float = 0.3   # P(a sentence goes on with ", CONJ clause")
    median_length: int = 250        # median document length in tokens
    length_sigma: float = 0.7
    max_length: int = 4000
    zipf_exponent: float = 1.1
    synonyms: int = 1               # 同义词 synonyms: surface forms per noun/verb/adjective (1 in the default corpus)


def _cdf(weights):
    """Cumulative weights, normalised, as a list (bisect on a Python float is the fastest single draw)."""
    cumulative = np.cumsum(np.asarray(weights, float))
    return (cumulative / cumulative[-1]).tolist()


def _zipf(n, exponent):
    return 1.0 / np.arange(1, n + 1) ** exponent


class CorpusWorld:
    """The fixed language (lexicon, agreement, collocations, topics, classes) every document of a seed uses."""

    def __init__(self, spec, rng):
        self.spec = spec
        sizes = {"det": 2 * spec.num_genders, "prep": spec.num_prepositions, "conj": spec.num_conjunctions,
                 "set": spec.num_set_words, "noun": spec.num_nouns * spec.synonyms,
                 "verb": spec.num_verbs * spec.synonyms, "adj": spec.num_adjectives * spec.synonyms}
        syllables = [c + v for c in CONSONANTS for v in VOWELS]  # 70 syllables
        words, seen = list(PUNCTUATION), set(PUNCTUATION)
        for kind, count in sizes.items():  # function words: 1 syllable; content words: 2-3
            target = len(words) + count
            while len(words) < target:
                length = 1 if kind in ("det", "prep", "conj") else 2 if kind == "set" else int(rng.integers(2, 4))
                word = "".join(rng.choice(syllables, size=length))
                if word not in seen:
                    seen.add(word)
                    words.append(word)
        self.words = words  # index = word index; kinds occupy consecutive ranges after the punctuation
        starts = np.cumsum([len(PUNCTUATION)] + list(sizes.values()))
        self.range = {kind: (int(starts[i]), int(starts[i + 1])) for i, kind in enumerate(sizes)}
        self.ids = rng.permutation(len(words))  # word index -> corpus ID (IDs carry no part-of-speech order)
        first = {kind: lo for kind, (lo, _) in self.range.items()}
        self.gender = rng.integers(0, spec.num_genders, size=spec.num_nouns)               # [nouns]
        self.first = first
        # Lexicon-wide Zipf CDFs (a random word order, so frequency is unrelated to the ID) and per-topic ones.
        self.general, self.topic = {}, {}
        for kind, support in (("noun", spec.topic_support), ("verb", spec.topic_support // 2),
                              ("adj", spec.topic_support // 2)):
            count = (self.range[kind][1] - self.range[kind][0]) // spec.synonyms
            order = rng.permutation(count)
            self.general[kind] = (order.tolist(), _cdf(_zipf(count, spec.zipf_exponent)))
            self.topic[kind] = [(rng.choice(count, support, replace=False).tolist(),
                                 _cdf(_zipf(support, spec.zipf_exponent))) for _ in range(spec.num_topics)]
        # Collocations: a noun's favourite adjectives and verbs, a verb's favourite objects. They come from a topic
        # the word itself belongs to, as in real text ("interest" -> "rate", "bank"), so the words a noun predicts
        # locally share its topic and what MLM learns from neighbours also groups words by topic.
        self.noun_adjectives = self._favourites("noun", "adj", rng)                         # [nouns, F]
        self.noun_verbs = self._favourites("noun", "verb", rng)                             # [nouns, F]
        self.verb_objects = self._favourites("verb", "noun", rng)                           # [verbs, F]
        self.preposition_cdf = _cdf(_zipf(spec.num_prepositions, 1.0))
        # Set phrases: Zipf-drawn words, so a frequent word sits in many phrases next to many different words
        # (its neighbours say little), while two words on each side name the phrase, hence the word (±2 context).
        set_words = rng.choice(spec.num_set_words, (spec.num_set_phrases, spec.set_phrase_length),
                               p=_zipf(spec.num_set_words, 1.0) / _zipf(spec.num_set_words, 1.0).sum())
        self.set_phrases = (self.range["set"][0] + set_words).tolist()
        self.set_phrase_table = (list(range(spec.num_set_phrases)), _cdf(_zipf(spec.num_set_phrases, 1.0)))
        num_classes = len(TIANCHI_CLASS_COUNTS)
        home = rng.permutation(spec.num_topics)[: 2 * num_classes].reshape(num_classes, 2)
        self.class_alpha = np.full((num_classes, spec.num_topics), 0.1)                    # [C,K]
        self.class_alpha[np.arange(num_classes)[:, None], home] = 1.5
        self.class_prior = np.asarray(TIANCHI_CLASS_COUNTS, float) / sum(TIANCHI_CLASS_COUNTS)

    def _favourites(self, kind, favourite_kind, rng):
        """[words of `kind`, F] favourite word indices of `favourite_kind`, drawn from one topic the word is in."""
        spec = self.spec
        count = (self.range[kind][1] - self.range[kind][0]) // spec.synonyms
        topics_of = [[] for _ in range(count)]
        for topic, (members, _) in enumerate(self.topic[kind]):
            for word in members:
                topics_of[word].append(topic)
        favourites = np.empty((count, spec.num_favourites), np.int64)
        for word, topics in enumerate(topics_of):
            home = topics[rng.integers(len(topics))] if topics else int(rng.integers(spec.num_topics))
            favourites[word] = rng.choice(self.topic[favourite_kind][home][0], spec.num_favourites)
        return favourites

    # ---- one document ----------------------------------------------------------------------------------------
    def _draw(self, table, r):
        items, cdf = table
        return items[min(bisect.bisect(cdf, r.random()), len(items) - 1)]

    def _content(self, kind, topic, favourites, r):
        """A noun/verb/adjective index (within its kind): a favourite, the topic's word, or any word."""
        spec = self.spec
        if favourites is not None and r.random() < spec.favourite_rate:
            return int(favourites[r.randrange(len(favourites))])
        table = self.topic[kind][topic] if r.random() < spec.topic_rate else self.general[kind]
        return self._draw(table, r)

    def _surface(self, kind, lexeme, r):
        """The word index of one of `lexeme`'s surface forms, drawn uniformly (the only form when synonyms == 1).

        Synonyms share every context, so counts over unlabelled text (LSA) or MLM can learn that they mean the same,
        while a classifier that reads word identities (TF-IDF) needs labelled examples of each form.
        """
        synonyms = self.spec.synonyms
        return self.first[kind] + lexeme * synonyms + (r.randrange(synonyms) if synonyms > 1 else 0)

    def _noun_phrase(self, noun, topic, r):
        spec = self.spec
        words = [self.first["det"] + 2 * int(self.gender[noun]) + (r.random() < 0.5)]  # agrees with the noun
        if r.random() < spec.adjective_rate:
            words.append(self._surface("adj", self._content("adj", topic, self.noun_adjectives[noun], r), r))
        return words + [self._surface("noun", noun, r)]

    def _clause(self, topic, r):
        subject = self._content("noun", topic, None, r)
        verb = self._content("verb", topic, self.noun_verbs[subject], r)
        obj = self._content("noun", topic, self.verb_objects[verb], r)
        words = (self._noun_phrase(subject, topic, r) + [self._surface("verb", verb, r)]
                 + self._noun_phrase(obj, topic, r))
        if r.random() < self.spec.prepositional_rate:
            preposition = self.first["prep"] + bisect.bisect(self.preposition_cdf, r.random())
            words += [preposition] + self._noun_phrase(self._content("noun", topic, None, r), topic, r)
        return words

    def _document(self, length, mixture_cdf, r):
        words = []
        while len(words) < length:
            topic = min(bisect.bisect(mixture_cdf, r.random()), len(mixture_cdf) - 1)  # one topic per sentence
            if r.random() < self.spec.set_phrase_rate:
                words += self.set_phrases[self._draw(self.set_phrase_table, r)] + [0]  # "set phrase ，"
            words += self._clause(topic, r)
            while r.random() < self.spec.conjunction_rate:
                words += [0, self.first["conj"] + r.randrange(self.spec.num_conjunctions)] + self._clause(topic, r)
            words.append(2 if r.random() < 0.1 else 1)  # "？" or "。"
        return self.ids[np.asarray(words[:length])]

    def sample_documents(self, num_docs, rng):
        """Draws `num_docs` labelled documents.

        Returns:
            labels: int64 [D]; docs: list of D int64 arrays of token IDs.
        """
        spec = self.spec
        labels = rng.choice(len(self.class_prior), size=num_docs, p=self.class_prior)      # [D]
        lengths = np.exp(rng.normal(np.log(spec.median_length), spec.length_sigma, num_docs))
        lengths = np.clip(lengths.astype(np.int64), 8, spec.max_length)                   # [D]
        mixtures = [_cdf(rng.dirichlet(self.class_alpha[c])) for c in labels]             # D x [K]
        r = random.Random(int(rng.integers(1 << 62)))  # Python's generator: fast single draws, seeded
        return labels, [self._document(int(n), m, r) for n, m in zip(lengths, mixtures)]

    def words_table(self):
        """Lines `id<TAB>word`, sorted by ID."""
        pairs = sorted(zip(self.ids.tolist(), self.words))
        return "".join(f"{i}\t{w}\n" for i, w in pairs)


def words_table_path(corpus_path):
    """`<corpus path without .tsv>.words.tsv`: where generate_corpus writes the ID → word table."""
    path = Path(corpus_path)
    return path.with_name(path.name.removesuffix(".tsv") + ".words.tsv")


def write_tsv(path, labels, docs):
    """Writes `label\ttext` rows atomically (minibert.training.io: temp file, then os.replace)."""
    rows = (f"{label}\t{' '.join(map(str, doc.tolist()))}\n" for label, doc in zip(labels.tolist(), docs))
    atomic_write_text(path, "label\ttext\n" + "".join(rows))


def generate_corpus(out, num_docs=4000, seed=0, labelled_dir=None, labelled_docs=2000, spec=CorpusSpec()):
    """Writes the pretraining corpus, its words table and, optionally, a fine-tuning split of the same world.

    Args:
        out: TSV path for the pretraining corpus (`label\\ttext`); the words table goes to words_table_path(out).
            None writes only the labelled split (finetune/toy_data.py's default cls data).
        num_docs: documents in the pretraining corpus.
        seed: fixes the world and every document; same seed → byte-identical files.
        labelled_dir: if given, writes `train.tsv` (90%) and `dev.tsv` (10%) of `labelled_docs` fresh
            documents there: same world, documents disjoint from the pretraining corpus.
        spec: the language's knobs (CorpusSpec); the default gives the default corpus.
    Returns:
        (labels [D], docs) of the pretraining corpus; None when out is None.
    """
    if num_docs < 1:
        raise ValueError(f"--docs: got {num_docs}, need at least 1 document; pass e.g. --docs 4000")
    if spec.synonyms < 1:
        raise ValueError(f"--synonyms: got {spec.synonyms}, need at least 1 form per word; pass e.g. --synonyms 1 "
                         "(the default corpus)")
    if labelled_dir is not None and labelled_docs < 10:
        raise ValueError(f"--labelled-docs: got {labelled_docs}, need at least 10 for a train/dev split; "
                         "pass e.g. --labelled-docs 2000")
    world = CorpusWorld(spec, np.random.default_rng([seed, 0]))
    pretraining = None
    if out is not None:
        pretraining = world.sample_documents(num_docs, np.random.default_rng([seed, 1]))
        write_tsv(out, *pretraining)
        atomic_write_text(words_table_path(out), world.words_table())
    if labelled_dir is not None:  # its own generator ([seed, 2]): the same split with or without `out`
        ft_labels, ft_docs = world.sample_documents(labelled_docs, np.random.default_rng([seed, 2]))
        cut = labelled_docs * 9 // 10
        write_tsv(Path(labelled_dir) / "train.tsv", ft_labels[:cut], ft_docs[:cut])
        write_tsv(Path(labelled_dir) / "dev.tsv", ft_labels[cut:], ft_docs[cut:])
    return pretraining


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the embedded default Tianchi-shaped corpus.")
    parser.add_argument("--out", default="data/default_corpus.tsv")
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labelled-dir", default=None, help="also write train.tsv/dev.tsv for fine-tuning")
    parser.add_argument("--labelled-docs", type=int, default=2000)
    parser.add_argument("--synonyms", type=int, default=1, help="surface forms per noun, verb and adjective "
                        "(default 1, the default corpus; docs/finetune_lab.md measures 4)")
    args = parser.parse_args(argv)
    try:
        labels, docs = generate_corpus(args.out, args.docs, args.seed, args.labelled_dir, args.labelled_docs,
                                       CorpusSpec(synonyms=args.synonyms))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lengths = np.array([len(d) for d in docs])
    print(f"wrote {args.out} and {words_table_path(args.out)}: {len(docs)} documents, {lengths.sum():,} tokens, "
          f"median length {int(np.median(lengths))}, max {lengths.max()}, "
          f"class counts {np.bincount(labels, minlength=14).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
