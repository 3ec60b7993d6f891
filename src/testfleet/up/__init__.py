"""`testfleet up`: a stack kept running for the edit-test loop. `server` serves its lanes to
runs on a unix socket; `client` and `shared_stack` are a run's side; `identity` is what both
agree on before a run uses the up's stack; `dotenv` is the env file it writes for shells."""
