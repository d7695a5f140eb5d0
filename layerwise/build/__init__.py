"""The build reading: spec -> torch.nn.Module (torch is imported only here and below)."""
