from tests.fake_alpaca.fixtures import fake  # noqa: F401 - the rich paper account
