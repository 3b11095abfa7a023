"""Shared test set-up."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each Hydra job configures logging to the test's captured streams; drop those handlers
    afterwards so a later test never logs into a closed stream."""
    yield
    for logger in (logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))):
        if isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    logger.removeHandler(handler)
