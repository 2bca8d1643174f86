"""The studies as a library: one module per study, each a frozen config (the paper's values) and ``run``."""
