"""Entry point of the indexer's worker process: `python -m kittiwake.store.indexworker`.

A module of its own so that what the worker pickles is `kittiwake.store.indexer.Prepared`
(loadable by the server), not `__main__.Prepared`.
"""

from kittiwake.store.indexer import serve

if __name__ == "__main__":
    serve()
