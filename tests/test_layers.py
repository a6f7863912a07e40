"""``--layers``: measure some layers only; their rows are the full run's rows at those layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entroprobe.errors import InputError
from entroprobe.models import load_model
from entroprobe.probe import ProbeConfig, run_probe
from entroprobe.probe.measures import resolve_layers


def test_layer_specs_resolve_against_the_model():
    assert resolve_layers("0,4,8,-1", 12) == (0, 4, 8, 12)
    assert resolve_layers("every=4", 10) == (0, 4, 8, 10)  # the last layer always
    assert resolve_layers("-1,-1,0", 4) == (0, 4)
    assert resolve_layers(None, 4) is None and resolve_layers("", 4) is None
    with pytest.raises(InputError, match=r"the model has layers 0 … 4 \(-1 is 4\); got \[5, -6\]"):
        resolve_layers("0,5,-6", 4)
    for bad in ("every=0", "every=x", "a,b", "1;2"):
        with pytest.raises(InputError, match="--layers takes layer indices"):
            resolve_layers(bad, 4)


@pytest.mark.parametrize("sigma", ["median", "pooled"])
def test_rows_of_the_kept_layers_equal_the_full_run(tmp_path, sigma):
    adapter = load_model("micro-mask", device="cpu")
    common = dict(model="micro-mask", text_prompts="micro-world", image_prompts="micro-world",
                  tasks=("encode", "text-gen", "image-gen"), limit=6, progress=False, sigma=sigma,
                  max_new_tokens=10, calibration_units=8)  # fmt: skip
    run_probe(ProbeConfig(out=tmp_path / "all", **common), adapter=adapter)
    run_probe(ProbeConfig(out=tmp_path / "some", layers="0,-1", **common), adapter=adapter)
    full = pd.read_parquet(tmp_path / "all" / "results.parquet")
    some = pd.read_parquet(tmp_path / "some" / "results.parquet")
    assert sorted(some["layer"].unique()) == [0, 4] and (some["num_layers"] == 4).all()
    kept = full[full["layer"].isin([0, 4])].reset_index(drop=True)
    assert len(kept) == len(some)
    columns = ["prompt_id", "task", "measure", "layer", "subsample", "subsample_response", "kernel_state"]
    assert kept[columns].values.tolist() == some[columns].values.tolist()
    # float rounding only: torch.linalg.eigvalsh of a float32 batch can differ in the last bit with the number of
    # matrices in the batch (2 layers or 5; MKL on AMD EPYC, about 1e-6 bits here)
    np.testing.assert_allclose(some["value"], kept["value"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(some["sigma"], kept["sigma"], rtol=1e-12)


def test_layers_are_part_of_the_run_and_checked_before_any_work(tmp_path):
    adapter = load_model("micro-ar", device="cpu")
    with pytest.raises(InputError, match="--layers takes layer indices"):
        run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "a", text_prompts="micro-world", layers="all"))
    with pytest.raises(InputError, match="the model has layers 0 … 4"):
        run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "b", text_prompts="micro-world", layers="7"),
                  adapter=adapter)  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "c", text_prompts="micro-world", limit=2, layers="0",
                          progress=False), adapter=adapter)  # fmt: skip
    with pytest.raises(InputError, match="other settings .*layers: '0' → '1'"):
        run_probe(ProbeConfig(model="micro-ar", out=tmp_path / "c", text_prompts="micro-world", limit=2,
                              layers="1", progress=False), adapter=adapter)  # fmt: skip


def test_a_task_measured_in_another_network_keeps_that_networks_layers(tmp_path):
    """OmniGen2 draws with a diffusion transformer of another depth than its MLLM: ``-1`` is each network's last."""
    import torch

    from entroprobe.models import LayerStates, Response
    from entroprobe.probe.measures import MeasureSettings
    from fake_adapter import FakeAdapter

    class TwoNetworks(FakeAdapter):
        def respond_image(self, text, *, seed=0, **generation):
            made = super().respond_image(text, seed=seed, **generation)
            deeper = lambda s: LayerStates(states=torch.cat([s.states, s.states[-2:] * 2]), positions=s.positions)  # noqa: E731
            return Response(prompt=deeper(made.prompt), response=deeper(made.response), output=made.output)

        def layers_for(self, task):
            return 5 if task == "image-gen" else self.num_layers

    run_probe(ProbeConfig(model="fake", out=tmp_path / "run", text_prompts="samples", tasks=("encode", "image-gen"),
                          limit=2, layers="0,-1", progress=False), adapter=TwoNetworks())  # fmt: skip
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    image, encode = rows[rows["task"] == "image-gen"], rows[rows["task"] == "encode"]
    manifest = __import__("json").loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["layers_by_task"] == {"image-gen": 5} and manifest["model"]["num_layers"] == 3
    assert sorted(image["layer"].unique()) == [0, 5] and (image["num_layers"] == 5).all()
    assert sorted(encode["layer"].unique()) == [0, 3] and (encode["num_layers"] == 3).all()
    settings = MeasureSettings(alpha=1.01, sigma=torch.ones(4), sigma_rule="pooled", base=2.0, layer_spec="0,-1",
                               num_layers=3)  # fmt: skip
    assert settings.at_depth(3) is settings
    with pytest.raises(InputError, match="--sigma pooled was calibrated on 3 layers; .* a network of 5"):
        settings.at_depth(5)
    with pytest.raises(InputError, match=r"--sigma pooled calibrates one σ per layer of fake's 3-layer network, but "
                                         r"it measures image-gen in one of 5"):
        run_probe(ProbeConfig(model="fake", out=tmp_path / "pooled", text_prompts="samples", tasks=("image-gen",),
                              limit=2, sigma="pooled", progress=False), adapter=TwoNetworks())  # fmt: skip
    with pytest.raises(InputError, match=r"the model has layers 0 … 3"):  # layer 4 exists only in the deeper one
        run_probe(ProbeConfig(model="fake", out=tmp_path / "deep", text_prompts="samples", tasks=("encode", "image-gen"),
                              limit=2, layers="4", progress=False), adapter=TwoNetworks())  # fmt: skip
