"""Loaders for the medical foundation models of the zoo (BiomedCLIP, RAD-DINO, MedSAM, UNI).

``open_clip_carried``: open_clip models published only on the Hugging Face hub (``hf-hub:<org>/<repo>``),
such as BiomedCLIP. open_clip reads such a model's configuration from the hub's ``open_clip_config.json``, which an
offline machine does not have; the entries here carry that file's vision part and preprocessing
(``HUB_CONFIGS``), so the tower builds without network and the weights are the only download.
Their towers are timm trunks (open_clip's ``TimmModel``): tokens come from the trunk, ``pooled``
is the projected image embedding.

``timm_file``: timm architectures whose published weights are not timm's (see ``TimmFileLoader``).
"""

from __future__ import annotations

from medfm.backbones.features import TokenOutput
from medfm.backbones.loader_openclip import OpenClipLoader
from medfm.backbones.loaders import TimmLoader, load_strict, register_loader, seeded, torch_load, wrong_weights

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# model id -> (open_clip model config (vision part), preprocess config), copied from the hub's open_clip_config.json
HUB_CONFIGS = {
    "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": (
        {"embed_dim": 512, "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                                          "timm_pool": "", "timm_proj": "linear", "image_size": 224}},
        {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    ),
}


@register_loader("open_clip_carried")
class OpenClipHubLoader(OpenClipLoader):
    default_blocks = "trunk.blocks"

    def _cfgs(self, entry):
        model_cfg, pre = HUB_CONFIGS[entry.model_id]
        return model_cfg, dict(pre)

    def hub(self, entry):
        return None  # the entry names its hub repo

    def build(self, entry, weights, img_size):
        from open_clip.model import _build_vision_tower

        model_cfg, _ = self._cfgs(entry)
        vision_cfg = dict(model_cfg["vision_cfg"], image_size=img_size or model_cfg["vision_cfg"]["image_size"])
        state = None
        if weights.kind != "random":
            state = {k.removeprefix("visual."): v for k, v in torch_load(weights.path).items() if k.startswith("visual.")}
            if not state:
                raise wrong_weights(entry, weights, "no 'visual.*' keys (not an open_clip checkpoint)")
        net = seeded(lambda: _build_vision_tower(model_cfg["embed_dim"], vision_cfg))
        return net if state is None else load_strict(net, state, entry, weights)

    def tokens(self, net, x):
        tokens = net.trunk.forward_features(x)  # normed by the trunk's final norm
        pooled = net.head(net.trunk.forward_head(tokens))
        p = self.num_prefix(net)
        return TokenOutput(prefix=tokens[:, :p], patches=tokens[:, p:], pooled=pooled)

    def num_prefix(self, net):
        return int(getattr(net.trunk, "num_prefix_tokens", 1))

    def final_norm(self, net):
        return net.trunk.norm


@register_loader("timm_file")
class TimmFileLoader(TimmLoader):
    """A timm architecture whose weights timm does not host (MedSAM's, UNI's, RAD-DINO's).

    Weights come only from the entry's own hub repo, an offline copy or ``--weights PATH``: never
    from the timm tag's default source, which holds another model's weights for the same architecture.
    """

    def hub(self, entry):
        return None


@register_loader("timm_file_hf_processor")
class TimmFileHfProcessorLoader(TimmFileLoader):
    """``timm_file`` for a Hugging Face checkpoint whose authors preprocess with its ``AutoImageProcessor``
    (RAD-DINO: ``rad_dino.RadDino`` calls ``AutoImageProcessor.from_pretrained("microsoft/rad-dino")``).

    The processor's own ``preprocessor_config.json`` — downloaded with the weights, or lying beside a
    ``--weights`` file — is the preprocessing (resize, crop, resample, mean/std), so it is never
    guessed. Without that file (a bare checkpoint, or ``--weights random``) the entry's carried values
    apply, and the identity's ``source`` says they were not checked against the file.
    """

    config_beside_weights = True

    def configure(self, entry, weights):
        import dataclasses

        from medfm.backbones.adapters.hf import PROCESSOR, processor_data_config
        from medfm.backbones.weights import hub_file

        if weights.kind != "file":
            return entry
        folder = weights.path.parent
        if weights.origin.startswith("hf-hub:") and entry.hub is not None:
            fetched = hub_file(entry.hub.hf_repo, PROCESSOR, entry.name, required=False)
            folder = fetched.parent if fetched is not None else folder
        if not (folder / PROCESSOR).is_file():
            carried = dict(entry.preprocess)
            carried["source"] = (f"carried in medfm's registry, NOT checked: no {PROCESSOR} beside {weights.path.name} "
                                 f"(put the hub's {PROCESSOR} there to use the authors' own) - {carried.get('source', '')}")
            return dataclasses.replace(entry, preprocess=carried)
        own = processor_data_config(folder, entry.name)
        own["source"] = f"{PROCESSOR} beside the weights ({weights.origin}), the authors' AutoImageProcessor settings"
        return dataclasses.replace(entry, preprocess=own)
