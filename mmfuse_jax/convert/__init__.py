"""Converters from official PyTorch state_dicts (given as numpy arrays) to our variables.

The library never imports torch: a caller turns a state_dict into numpy first, e.g.
`{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}`.
"""
