"""Print the standard-library source files that the production server imports.

The Dockerfiles compile exactly these in the final stage: base images ship no bytecode
for the standard library, and a non-root, read-only runtime cannot write any, so each
start would compile them again.
"""

import concurrent.futures.thread  # noqa: F401 (asyncio's default executor, used later)
import sys
import sysconfig
import urllib.request  # noqa: F401 (what the HEALTHCHECK imports)

import gunicorn.app.wsgiapp  # noqa: F401 (the process manager)
from uvicorn.config import Config
from uvicorn_worker import UvicornWorker  # noqa: F401 (the workers)

# Imports the app with the event loop and HTTP parser its workers use.
Config("app.main:app").load()
stdlib = sysconfig.get_path("stdlib") + "/"
modules = list(sys.modules.values())
files = {getattr(module, "__file__", None) or "" for module in modules}
print("\n".join(sorted(f for f in files if f.startswith(stdlib) and f.endswith(".py"))))
