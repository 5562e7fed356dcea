"""EnterpriseHPC over OpenEnv: typed models, a WebSocket client, and a server with one episode per session.

`server/app.py` builds the FastAPI app (`build_app`) and runs it (`main`); `server/environment.py`
wraps one `TaskSession` per session; `client.py` is the typed `EnvClient`; `probe.py` finds a local
server (a free port, `/health` until ready). The load tests live with the other benchmarks
(`hpcgym.bench.loadtest`).

Exported here is what a client of a server needs beside `client.HpcEnvClient`: the models, the key
a client sends (`api_key_from_environ`: `$OPENENV_API_KEY_FILE`'s content, else `$OPENENV_API_KEY`)
and the probe. `HpcEnvClient` itself is imported from `client.py`, so that the server, which imports
this package for its models, does not load the WebSocket client too.
"""

from hpcgym.interfaces.openenv.models import HpcAction, HpcObservation, HpcState
from hpcgym.interfaces.openenv.probe import free_port, wait_healthy
from hpcgym.interfaces.openenv.server.auth import api_key_from_environ

__all__ = ["HpcAction", "HpcObservation", "HpcState", "api_key_from_environ", "free_port", "wait_healthy"]
