"""EnterpriseHPC over OpenEnv: typed models, a WebSocket client, and a server with one episode per session.

`server/app.py` builds the FastAPI app (`build_app`) and runs it (`main`); `server/environment.py`
wraps one `TaskSession` per session; `client.py` is the typed `EnvClient`; `probe.py` finds a local
server (a free port, `/health` until ready). The load tests live with the other benchmarks
(`hpcgym.bench.loadtest`).
"""
