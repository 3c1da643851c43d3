"""``fedx stats`` on the Grid: statistics from summed, encrypted per-institution vectors.

The server relays. Stage by stage, each institution sends its vector of additive statistics (two
ciphertexts: whole-number entries and the rest); the server adds them under the public context and
sends the sums back; every institution decrypts, releases them under the data owners' policy
(:mod:`fedx.privacy.policy`) and either answers with the final statistics or computes the next stage
(quantile refinement) and its vector. The institutions' releases must agree; a minority is left out.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ..analytics import StatsPlan
from ..data.preprocess import merge_levels
from ..errors import FederationError
from . import protocol as P
from .coordinator import Coordinator
from .masking import check_masked, masked_sum, with_mask
from .records import blobs_record, named_arrays_record, read_blobs, read_named_arrays

log = logging.getLogger(__name__)

MAX_STAGES = 64


class StatsOrchestrator(Coordinator):
    """Runs the ``stats:`` query of a config over the Grid; :meth:`run` returns the body of stats.json."""

    def run(self) -> dict[str, Any]:
        """Connect, discover levels when needed, run the stages, and return the released statistics."""
        if self.cfg.stats is None:
            raise FederationError("the config has no stats: section")
        self.connect()
        plan = StatsPlan.from_config(self.cfg.stats, seed=self.cfg.seed)
        levels: dict[str, list[str]] = {}
        if plan.needs_levels():
            answers = self.ask(P.STATS_LEVELS, {n: {} for n in self.nodes}, "levels")
            levels = merge_levels([doc["levels"] for doc in answers.values()])
        stage: dict[str, Any] | None = None
        total: dict[str, Any] | None = None
        for step in range(1, MAX_STAGES + 1):
            self.on_event("phase", {"what": f"statistics stage {step}"})
            doc = {"levels": levels, "stage": stage, "encrypted": self.encrypted}
            records = {P.REC_GLOBAL: self._record(total)} if total is not None else None
            docs: dict[int, dict[str, Any]] = {n: doc for n in self.nodes}
            if self.masking is not None:
                docs = with_mask(docs, self.masking.open(list(self.nodes), f"statistics stage {step}"))
            answers = self.ask(P.STATS, docs, f"statistics stage {step}", want_content=True, records=records)
            for nid in answers:
                self.nodes[nid].ready = True
            agreed = self._agree(answers)
            first = answers[agreed[0]][0]
            if first["done"]:
                result = dict(first["result"])
                result["institutions"] = [{"name": self.nodes[n].name,
                                           "rows": self.institutions.get(self.nodes[n].name, {}).get("n_rows")}
                                          for n in sorted(self.nodes)]
                result["stages"] = step - 1
                return result
            stage = first["stage"]
            parts = [self._payloads(answers[n][1]) for n in agreed]
            if self.masking is not None:
                keys = sorted(parts[0])
                for p in parts:
                    check_masked(p[keys[0]], self.masking.tag)
                sums = [masked_sum(self.public, [p[k] for p in parts]) for k in keys]
                total = dict(zip(keys, self.masking.close([self.nodes[n].name for n in agreed], sums,
                                                          f"statistics stage {step}")))
            else:
                total = {key: self.sum_payloads([p[key] for p in parts]) for key in parts[0]}
        raise FederationError(f"the statistics did not finish within {MAX_STAGES} stages")

    def _agree(self, answers: dict[int, tuple[dict[str, Any], Any]]) -> list[int]:
        """The nodes whose release (final result or next stage) matches the majority's."""
        def key(doc: dict[str, Any]) -> str:
            import json

            return json.dumps(doc.get("result"), sort_keys=True) if doc["done"] else doc["stage_digest"]

        votes = Counter(key(doc) for doc, _ in answers.values())
        winner, count = votes.most_common(1)[0]
        agreed = [n for n, (doc, _) in answers.items() if key(doc) == winner]
        for n in set(answers) - set(agreed):
            log.warning("%s released something else than the majority; it is left out", self.nodes[n].name)
            self.nodes.pop(n)
        if len(agreed) < self.cfg.federation.min_clients:
            raise FederationError(f"only {len(agreed)} institution(s) agree on the release; federation.min_clients "
                                  f"is {self.cfg.federation.min_clients}")
        return agreed

    def _payloads(self, content: Any) -> dict[str, Any]:
        rec = content.array_records["payload"]
        if self.encrypted:
            return read_blobs(rec)
        return {k: [v] for k, v in read_named_arrays(rec).items()}

    def _record(self, total: dict[str, Any]) -> Any:
        if self.encrypted:
            return blobs_record(total)
        return named_arrays_record({k: v[0] for k, v in total.items()})
