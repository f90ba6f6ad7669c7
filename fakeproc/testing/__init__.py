"""Testing with fakeproc: a mounted machine per test (``mounting``) and the pytest plugin
(``plugin``, registered as the ``pytest11`` entry point ``fakeproc``)."""
