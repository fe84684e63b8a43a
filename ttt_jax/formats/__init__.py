"""How tasks become tokens and generated tokens become grids: one interface, three formats.

- `compact`: ours, one token per cell (ttt_jax/data/format.py), 16-token vocabulary.
- `marc`: the paper's text prompts (ekinakyurek/marc `--new_format`), through the
  checkpoint's Llama-3 tokenizer and chat template.
- `barc`: the same code's `--barc_format`, for BARC's Llama-3.1 checkpoints.

`load_format(name, checkpoint_dir)` gives a `Format`; every stage (stage 1, TTT
data and loss masks, inference prompts, scoring, parsing answers) goes through it,
and grids stay arrays everywhere else.
"""

from ttt_jax.formats.base import Format
from ttt_jax.formats.load import FORMATS, load_format

__all__ = ['FORMATS', 'Format', 'load_format']
