"""Trust scores in fixed-point integers (parts per million). Pure and deterministic: trust is part
of the Primary, so every validator must compute the very same numbers (no floats anywhere).

Rules (one observation at a time):
- agreement raises trust additively:            t ← min(1_000_000, t + agree_gain_ppm)
- dissent and withheld reveals cut it:          t ← t × keep_ppm ÷ 1_000_000     (rounded down)
- equivocation (proved by Evidence) slashes:    t ← 0, forever; the evidence id is recorded
- decay (once per epoch) pulls toward the prior: t ← t + (prior − t) × decay_ppm ÷ 1_000_000
  (rounded toward the prior), so old behaviour is forgotten slowly, in both directions.

Why not seed 004's dw = 0.08·o − 0.04·(1−o) − 0.002? Its expected drift for a node wrong a fraction
p of the time is 0.08(1−p) − 0.04p − 0.002 > 0 for every p < 0.65: a node wrong 64% of the time gains
trust. Here the drift at the neutral prior N is (1−p)·gain − p·N·(1−keep), which is negative as soon
as p > gain ÷ (gain + N·(1−keep)) = 20 000 ÷ (20 000 + 60 000) = 1/4 with the defaults.

We promise (and property-test) X = 1/3: a node wrong (dissenting or withholding) in more than a third
of its observations — spread over windows of up to 12 — ends below the prior, and below the
replacement threshold when it is wrong at least half the time. One third is the BFT bound: a
validator that disagrees with the decided result that often behaves like the f < n/3 Byzantine nodes
the protocol tolerates, and an honest node on a healthy network is almost never wrong. The default
break-even of 1/4 leaves a margin for adversarial ordering within a window. An honest node (only
agreements) never loses trust: it rises to the cap and decay never takes it below the prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mycelium.identity import NodeId

SCALE_PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class TrustConfig:
    prior_ppm: int = 500_000  # trust of a new validator, and where decay leads back to
    agree_gain_ppm: int = 20_000  # added per agreement; larger = faster recovery, weaker memory of faults
    dissent_keep_ppm: int = 880_000  # fraction kept after a dissent (a 12% cut)
    withheld_keep_ppm: int = 880_000  # after a withheld reveal; as hard as dissent, or liars would withhold
    decay_ppm: int = 10_000  # fraction of the distance to the prior closed per epoch (1%)
    replace_below_ppm: int = 300_000  # validators under this are replaced at the next epoch boundary

    def __post_init__(self) -> None:
        for name in ("prior_ppm", "agree_gain_ppm", "dissent_keep_ppm", "withheld_keep_ppm", "decay_ppm",
                     "replace_below_ppm"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= SCALE_PPM:
                raise ValueError(f"TrustConfig.{name} must be an integer in [0, {SCALE_PPM}], got {value!r}")
        if self.replace_below_ppm >= self.prior_ppm:
            raise ValueError("TrustConfig.replace_below_ppm must be below prior_ppm, or new validators are replaced")


class Outcome(str, Enum):
    AGREE = "agree"  # revealed (or reported) what the majority decided
    DISSENT = "dissent"  # revealed something else
    WITHHELD = "withheld"  # committed but did not reveal, or did not answer at all


def after_outcome(trust_ppm: int, outcome: Outcome, config: TrustConfig) -> int:
    if outcome is Outcome.AGREE:
        return min(SCALE_PPM, trust_ppm + config.agree_gain_ppm)
    keep = config.dissent_keep_ppm if outcome is Outcome.DISSENT else config.withheld_keep_ppm
    return trust_ppm * keep // SCALE_PPM


def after_decay(trust_ppm: int, config: TrustConfig) -> int:
    gap = config.prior_ppm - trust_ppm
    step = abs(gap) * config.decay_ppm // SCALE_PPM
    return trust_ppm + step if gap > 0 else trust_ppm - step


@dataclass
class TrustBook:
    """Trust of every known validator, plus the evidence that slashed some of them."""

    config: TrustConfig = field(default_factory=TrustConfig)
    scores: dict[NodeId, int] = field(default_factory=dict)
    slashed: dict[NodeId, bytes] = field(default_factory=dict)  # node -> id (hash) of its evidence

    def trust(self, node: NodeId) -> int:
        if node in self.slashed:
            return 0
        return self.scores.get(node, self.config.prior_ppm)

    def record(self, node: NodeId, outcome: Outcome) -> int:
        if node not in self.slashed:
            self.scores[node] = after_outcome(self.trust(node), outcome, self.config)
        return self.trust(node)

    def slash(self, node: NodeId, evidence_id: bytes) -> None:
        """Equivocation: trust drops to zero and stays there; the first evidence is kept."""
        self.slashed.setdefault(node, evidence_id)
        self.scores[node] = 0

    def decay(self) -> None:
        for node in sorted(self.scores):
            if node not in self.slashed:
                self.scores[node] = after_decay(self.scores[node], self.config)

    def to_replace(self, validators: list[NodeId]) -> list[NodeId]:
        """Validators whose trust is under the threshold (slashed ones included), sorted."""
        return sorted(v for v in validators if self.trust(v) < self.config.replace_below_ppm)

    def to_wire(self) -> dict:
        return {"scores": dict(self.scores), "slashed": dict(self.slashed)}

    @classmethod
    def from_wire(cls, obj: object, config: TrustConfig | None = None) -> TrustBook:
        if not isinstance(obj, dict):
            raise ValueError("trust book must be a map")
        scores, slashed = obj.get("scores"), obj.get("slashed")
        if not isinstance(scores, dict) or not isinstance(slashed, dict):
            raise ValueError("trust book needs 'scores' and 'slashed' maps")
        if not all(isinstance(k, str) and isinstance(v, int) and 0 <= v <= SCALE_PPM for k, v in scores.items()):
            raise ValueError(f"trust scores must map node ids to integers in [0, {SCALE_PPM}]")
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in slashed.items()):
            raise ValueError("slashed entries must map node ids to evidence ids")
        return cls(config or TrustConfig(), dict(scores), dict(slashed))
