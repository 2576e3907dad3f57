"""Model families (demand, matching, location) and their shared registry and metric helpers.
Reads the curated lake; never imports `jobs` or `serving`."""
