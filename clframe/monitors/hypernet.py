"""What a hypernetwork run adds to ``summary.json``: sizes, and how well the task is inferred."""

from __future__ import annotations

from typing import Any

import torch

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor, RunContext
from clframe.evaluation.evaluate import evaluation_mode
from clframe.models.protocols import GeneratesWeights, Grows


@MONITORS.register("hypernet")
class HypernetReport(Monitor):
    """For a hypernetwork run (a model that ``GeneratesWeights``): its sizes, and, at every
    experience end with ``task_inference=entropy``, the fraction of each seen experience's eval
    samples whose inferred task is their own task label. Batches of ``eval.batch_size`` samples.
    """

    enabled_by_default = True

    def __init__(self) -> None:
        self.batch_size = 1000
        self.rows: list[list[float]] = []

    def attach(self, run: RunContext) -> bool:
        self.batch_size = run.module.eval_batch_size
        return isinstance(run.module.model, GeneratesWeights)

    def on_boundary_eval(self, module: Any, experience: int, rows: list[dict[str, Any]]) -> None:
        if module.model.task_inference == "entropy":
            self.rows.append(self.task_inference_acc(module, experience))

    @torch.no_grad()
    def task_inference_acc(self, module: Any, last: int) -> list[float]:
        """Task-inference accuracy on the eval data of experiences ``0..last``."""
        out = []
        with evaluation_mode(module.model) as hn:
            for e in module.stream.experiences[: last + 1]:
                data = e.eval
                hits = torch.zeros((), device=module.device)
                for i in range(0, len(data), self.batch_size):
                    x, t = data.x[i: i + self.batch_size], data.t[i: i + self.batch_size]
                    hits += (hn.infer_tasks(x, t) == t).sum()
                out.append(float(hits) / max(len(data), 1))
        return out

    def summary(self, module: Any) -> dict[str, Any]:
        """``hypernet``: parameter counts (the hypernetwork's own weights and task embeddings, and the
        target weights it generates per task), the RNN's final hidden size, and with entropy
        inference the task-inference accuracy after each experience and at the end."""
        hn = module.model
        gen = hn.core.generator
        out: dict[str, Any] = {
            "params": sum(p.numel() for p in hn.core.parameters()),
            "task_emb_params": sum(p.numel() for p in hn.task_embs),
            "target_params": hn.n_params,
            "task_inference": hn.task_inference,
        }
        if isinstance(gen, Grows):
            out["hidden_size"] = gen.hidden_size
        if self.rows:
            out["task_inference_acc"] = self.rows
            out["task_inference_final"] = self.rows[-1]
            out["task_inference_final_mean"] = sum(self.rows[-1]) / len(self.rows[-1])
        return {"hypernet": out}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [list(r) for r in state["rows"]]
