"""A fourth model family that lives outside `models/`: what a brand's own family costs. The whole
family is this package; the registry learns of it through one entry of QUANYU_FAMILIES
(`tests.families.stock.family:FAMILY`), the same line `models/families.py` would hold for a
family of the repository (tests/jobs/test_fourth_family.py)."""
