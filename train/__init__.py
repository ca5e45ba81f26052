"""SFT and DPO on Ray Train + TRL (not built yet: no issue has been opened for it)."""
