"""The ops tests run the demo backends of tests/graphql (gql_demo.py): that folder has no
conftest.py (a package named ``graphql`` would shadow graphql-core), so its helpers are put on
the import path here, as pytest does for the tests inside it."""

from __future__ import annotations

import sys
from pathlib import Path

GRAPHQL_TESTS = str(Path(__file__).resolve().parents[1] / "graphql")
if GRAPHQL_TESTS not in sys.path:
    sys.path.insert(0, GRAPHQL_TESTS)
