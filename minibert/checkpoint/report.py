"""The coverage report every conversion prints: where each tensor went, and why.

Silent partial loads are the classic checkpoint bug (a renamed key leaves a layer at its random init and the
model "works", just badly). So every source tensor must be consumed or skipped WITH a reason, and every target
parameter loaded or freshly initialised WITH a reason; `convert.plan_conversion` raises on anything else.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import List, Tuple


@dataclass
class CoverageReport:
    """Accounts for every tensor of one conversion.

    Attributes:
      source_format: "minibert", "hf" or "tf".
      consumed: (source tensor name, target parameter it went into); fused Q/K/V gives three pairs.
      skipped: (source tensor name, reason it was not used).
      loaded: target parameters filled from the source.
      fresh: (target parameter, reason it keeps its fresh initialisation).
      notes: anything else worth knowing (e.g. a tied decoder taken from the word embeddings).
    """
    source_format: str
    consumed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    loaded: List[str] = field(default_factory=list)
    fresh: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def num_source_tensors(self) -> int:
        return len(self.consumed) + len(self.skipped)

    def summary(self) -> str:
        """One line: the counts."""
        return (f"{self.source_format} source: {self.num_source_tensors} tensors = {len(self.consumed)} consumed + "
                f"{len(self.skipped)} skipped; target: {len(self.loaded) + len(self.fresh)} parameters = "
                f"{len(self.loaded)} loaded + {len(self.fresh)} freshly initialised")

    def format(self, verbose: bool = False) -> str:
        """The report as text. Skips and fresh parameters are grouped by reason; `verbose` lists every tensor."""
        lines = ["coverage report: " + self.summary()]
        if verbose:
            lines += [f"  consumed  {src}  ->  {dst}" for src, dst in self.consumed]
        for reason, count in Counter(reason for _, reason in self.skipped).items():
            names = [n for n, r in self.skipped if r == reason]
            shown = names if verbose or count <= 3 else names[:2] + [f"... ({count - 2} more)"]
            lines.append(f"  skipped {count:>4}: {reason}: {', '.join(shown)}")
        for name, reason in self.fresh:
            lines.append(f"  fresh  {name}: {reason}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)
