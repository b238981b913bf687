"""Import weights trained with the official PyTorch code.

`CONVERTERS[model](state_dict, our_model, template) -> Conversion` maps an official
state_dict, given as {name: numpy array} (the library never imports torch), to our
variables with the structure of `template`; `Conversion.report()` lists the official tensors
without a counterpart and the settings under which the two functions differ.
scripts/convert_torch_checkpoint.py turns a .pt file into a workdir the CLI evaluates and
exports; scripts/torch_parity.py checks outputs and gradients against the official code.
"""

from __future__ import annotations

from mmfuse_jax.convert import argf, mult, rerd
from mmfuse_jax.convert.common import Conversion

CONVERTERS = {
    "mult": mult.convert,   # yaohungt/Multimodal-Transformer MULTModel
    "argf": argf.convert,   # TmacMai/ARGF_multimodal_fusion ARGF_context2 modules
    "rerd": rerd.convert,   # Redaimao/RERD RERDModel (different signature: see convert/rerd.py)
}

__all__ = ["CONVERTERS", "Conversion"]
