"""Operations over everything below: health and doctor, update checks, offline bundles, the demo and
the ``modelcache`` command line. Nothing in the library imports this package."""
