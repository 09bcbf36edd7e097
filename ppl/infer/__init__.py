"""Inference: NUTS/HMC, SVI/MAP through Pyro, and the Fit results object.

Kept import-light: ``methods`` (option tables) is read by the checker without torch.
"""
