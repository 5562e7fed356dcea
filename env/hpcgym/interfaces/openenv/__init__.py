"""EnterpriseHPC over OpenEnv: typed models, a WebSocket client, and a server with one episode per session.

`server/app.py` builds the FastAPI app (`build_app`) and runs it (`main`); `server/environment.py`
wraps one `TaskSession` per session; `client.py` is the typed `EnvClient`; `loadtest.py` measures many
concurrent sessions over the socket.
"""
