"""Sweep files: arms, grids of overrides, the arm's config and the errors that name the arm."""

import pytest

from ttt_jax.errors import UserError
from ttt_jax.sweep import spec


def test_grid_is_the_product_of_axes_named_by_last_key_parts():
  arms = spec.grid({'ttt.ttt.lr': (1e-3, 3e-3), 'ttt.ttt.lora.rank': [8, 32]}, prefix='g_')
  assert [a.name for a in arms] == [
      'g_lr=0.001+rank=8',
      'g_lr=0.001+rank=32',
      'g_lr=0.003+rank=8',
      'g_lr=0.003+rank=32',
  ]
  assert arms[1].overrides == (('ttt.ttt.lr', 1e-3), ('ttt.ttt.lora.rank', 32))
  assert len({hash(a) for a in arms}) == 4  # frozen and hashable


def test_sweep_needs_a_baseline_unique_names_and_known_stages():
  with pytest.raises(ValueError, match="no arm named 'baseline'"):
    spec.Sweep('configs/demo.py', (spec.Arm('a'),))
  with pytest.raises(ValueError, match='repeat'):
    spec.Sweep('configs/demo.py', (spec.Arm('baseline'), spec.Arm('baseline')))
  with pytest.raises(ValueError, match='stages'):
    spec.Arm('x', stages=('train',))
  with pytest.raises(ValueError, match='needs the ttt stage'):
    spec.Arm('x', stages=('predict_ttt',))
  with pytest.raises(ValueError, match='arm name'):
    spec.Arm('a/b')


def test_arm_config_applies_sweep_then_arm_overrides():
  sweep = spec.Sweep(
      'configs/demo.py',
      (spec.Arm('baseline'), spec.Arm('lr', {'ttt.ttt.lr': 0.25, 'predict.prompts.d8': [0, 4]})),
      overrides={'selector': 'gen:heldout@slice=0:2', 'ttt.ttt.lr': 0.5},
  )
  base, arm = (spec.arm_config(sweep, a) for a in sweep.arms)
  assert base.ttt.ttt.lr == 0.5 and arm.ttt.ttt.lr == 0.25
  assert arm.predict.prompts.d8 == (0, 4)
  # the demo's one selector feeds both stages (a FieldReference), as --config.selector does
  assert arm.ttt.data.selector == arm.predict.selector == 'gen:heldout@slice=0:2'


def test_bad_overrides_name_the_arm_and_the_key():
  bad_key = spec.Sweep('configs/demo.py', (spec.Arm('baseline', {'ttt.ttt.lrr': 1.0}),))
  with pytest.raises(UserError, match=r'arm baseline: --config.ttt.ttt.lrr: no such field'):
    spec.arm_config(bad_key, bad_key.arms[0])
  bad_type = spec.Sweep('configs/demo.py', (spec.Arm('baseline'),), {'ttt.ttt.epochs': 'two'})
  with pytest.raises(UserError, match=r"sweep: --config.ttt.ttt.epochs='two'"):
    spec.arm_config(bad_type, bad_type.arms[0])


def test_load_sweep_names_the_file(tmp_path):
  with pytest.raises(UserError, match='no such file'):
    spec.load_sweep(str(tmp_path / 'missing.py'))
  empty = tmp_path / 'empty.py'
  empty.write_text('x = 1\n')
  with pytest.raises(UserError, match='defines no get_sweep'):
    spec.load_sweep(str(empty))
  assert [a.name for a in spec.load_sweep('configs/sweeps/smoke.py').arms] == ['baseline', 'no_ttt']


def test_the_laptop_sweep_takes_a_split_and_a_base_model():
  sweep = spec.load_sweep('configs/sweeps/laptop.py:heldout,base=runs/ft2/hf')
  config = spec.arm_config(sweep, sweep.arm('no_transformations'))
  assert config.ttt.model.checkpoint_dir == config.predict.model.checkpoint_dir == 'runs/ft2/hf'
  assert config.selector.startswith('gen:heldout@') and not config.ttt.data.colors
  default = spec.arm_config(spec.load_sweep('configs/sweeps/laptop.py'), sweep.arm('baseline'))
  assert default.selector.startswith('gen:val@') and default.ttt.model.checkpoint_dir == 'builtin'
  for bad in ('val', 'heldout,base='):
    with pytest.raises(ValueError, match='unknown argument'):
      spec.load_sweep(f'configs/sweeps/laptop.py:{bad}')


def test_readouts_name_vote_methods():
  from ttt_jax.infer.vote import VoteConfig  # pylint: disable=import-outside-toplevel

  assert spec.readout_vote(VoteConfig(), 'flat').method == 'flat'
  single = spec.readout_vote(VoteConfig(), 'single_flip_ud')
  assert (single.method, single.transform) == ('single', 'flip_ud')
  with pytest.raises(ValueError, match="readout 'single_spin'"):
    spec.Sweep('configs/demo.py', (spec.Arm('baseline'),), readouts=('single_spin',))
  with pytest.raises(ValueError, match="readout 'best'"):
    spec.Sweep('configs/demo.py', (spec.Arm('baseline'),), readouts=('best',))
