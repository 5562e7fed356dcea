"""GRPO training and evaluation against hpcgym's EnterpriseHPC environment (TRL 1.x).

`env.py` is the tool environment TRL drives and `backends.py` runs its episodes; `dataset.py` makes
rows from the scenario splits, `grpo.py` is the training entry point, `rollout.py` the
`rollout_func` path, `evaluate.py` the test-split evaluation, `tiny.py` an offline tiny model for
smoke runs. These import hpcgym; hpcgym imports nothing from here.
"""
