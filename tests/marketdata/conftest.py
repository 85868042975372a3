from tests.fake_alpaca.fixtures import fake_alpaca  # noqa: F401
