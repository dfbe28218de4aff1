"""Entry point of a worker process (workers.py): `python -m kittiwake.store.indexworker`.

A module of its own so that what the worker pickles is `kittiwake.store.workers.Prepared`
(loadable by the server), not `__main__.Prepared`.
"""

from kittiwake.store.workers import serve

if __name__ == "__main__":
    serve()
