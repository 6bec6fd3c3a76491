"""``clframe.api``, the public API for plug-ins: every name it exports exists, is documented in
docs/extending.md, and is what the guide's examples import; importing it stays light."""

from __future__ import annotations

import re
from pathlib import Path

import clframe.api as api
from clframe.config.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "extending.md").read_text()


def test_every_exported_name_exists_once():
    assert len(api.__all__) == len(set(api.__all__))
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert missing == [], f"clframe.api.__all__ names what it does not define: {missing}"
    registries = [n for n in api.__all__ if n.isupper()]
    assert sorted(registries) == ["BACKBONES", "DATASETS", "HEADS", "HYPERNETS", "MONITORS", "SCENARIOS", "STRATEGIES"]
    assert all(isinstance(getattr(api, n), Registry) for n in registries)


def test_every_exported_name_is_in_the_extension_guide():
    undocumented = [n for n in api.__all__ if not re.search(rf"`[^`]*\b{n}\b[^`]*`", GUIDE)]
    assert undocumented == [], f"docs/extending.md does not mention {undocumented}"


def test_the_guides_examples_import_clframe_only_from_the_public_api():
    imports = re.findall(r"^from (clframe[\w.]*) import (.+)$", GUIDE, flags=re.M)
    assert imports, "docs/extending.md has no example importing clframe"
    assert {module for module, _ in imports} == {"clframe.api"}
    names = {n.strip() for _, line in imports for n in line.split(",")}
    assert names <= set(api.__all__)


def test_the_contract_names_what_the_core_relies_on():
    # the docstring is the contract: the fields and signatures clframe.run.build and the model use
    for term in ("TensorData(x, y, t)", "classes_in_this_experience", "n_classes", "input_shape", "n_tasks",
                 "self.out_features: int", "forward(x) -> features [B, out_features]", "in_features",
                 "forward(h, t) -> logits [B, n_classes]", "head(backbone(x), t)"):
        assert term in api.__doc__, term
