"""Built-in backbones. A backbone takes ``input_shape`` first and exposes ``out_features``."""
