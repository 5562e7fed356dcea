"""Env-server fleets on Slurm: past one machine, OpenEnv servers run as a Slurm job array.

`config` reads the named, versioned fleet configs (`configs/*.yaml`); `launcher` renders the sbatch
scripts from `templates/`, submits the server array and the training job that depends on it, reports
status and tears everything down; `serve` is what each array task runs: it starts one server and
announces it in the launch's coordination directory only once `/health` passes. On the client side,
`pool` spreads sessions over the fleet's URLs and survives a server going away.
"""
