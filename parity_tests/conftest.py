import warnings

# pytorch_pretrained_bert uses torch's deprecated add_(Number, Tensor) overload.
warnings.filterwarnings("ignore", message="This overload of add_ is deprecated")
