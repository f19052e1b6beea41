"""The search: the run's study, the ask/tell loop, early stopping, and the search session that
both backends (this process, a Ray cluster) assemble the same way."""
