"""Every study preset names only registered backbones and datasets, so `medfm sweep --preset` can run it."""

import pytest

from medfm.backbones.zoo import BACKBONES
from medfm.data.zoo import DATASETS
from medfm.presets import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_names_only_registered_backbones_and_datasets(name):
    preset = PRESETS.get(name)
    assert [b for b in preset.backbones if b not in BACKBONES] == []
    assert [d for d in preset.datasets if d.split("?")[0].split(":")[0] not in DATASETS] == []
