"""``torch.nn.utils``: gradient clipping (:func:`clip_grad_norm_`, :func:`clip_grad_value_`) and
the flattening of parameters into one vector and back."""
from .clip_grad import clip_grad_norm_, clip_grad_value_, get_total_norm
from .convert_parameters import parameters_to_vector, vector_to_parameters

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "parameters_to_vector",
           "vector_to_parameters"]
