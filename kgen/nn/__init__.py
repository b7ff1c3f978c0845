"""kgen.nn: layers, losses, optimizers, data and training loops on kgen's kernels, with
PyTorch's names and layouts and Keras's compile/fit/evaluate/predict."""
from kgen.nn import callbacks, data, metrics, schedules, zoo
from kgen.nn.callbacks import (Callback, CSVLogger, EarlyStopping, History, LearningRateScheduler, ModelCheckpoint,
                               ReduceLROnPlateau, TerminateOnNaN)
from kgen.nn.checkpoint import load, save
from kgen.nn.data import DataLoader, batches, load_cifar10, load_idx, load_mnist, load_mnist_5k, split_mnist_5k
from kgen.nn.layers import (AvgPool2d, Conv2d, Dropout, Embedding, Flatten, Linear, LogSoftmax, MaxPool2d, ReLU, Sequential,
                            Sigmoid, Softmax, Tanh, manual_seed)
from kgen.nn.layers import BatchNorm1d, BatchNorm2d, LayerNorm
from kgen.nn.layers import ELU, GELU, Hardtanh, Identity, LeakyReLU, ReLU6, SiLU, Softplus
from kgen.nn.layers import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, MaxPool1d
from kgen.nn.layers import Conv1d
from kgen.nn.losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, MSELoss, NLLLoss, SmoothL1Loss,
                            SparseCategoricalCrossentropy)
from kgen.nn.module import Module
from kgen.nn.optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from kgen.nn.plots import plot_history
from kgen.nn.precision import GradScaler
from kgen.nn.recurrent import GRU, LSTM, LastStep
from kgen.nn.train import Trainer, eval_step, predict_step, train_step

__all__ = ["callbacks", "Callback", "CSVLogger", "EarlyStopping", "History", "LearningRateScheduler",
           "ModelCheckpoint", "ReduceLROnPlateau", "TerminateOnNaN", "plot_history",
           "data", "metrics", "schedules", "zoo", "DataLoader", "batches", "load_idx", "load_mnist", "load_mnist_5k",
           "load_cifar10", "split_mnist_5k", "AvgPool2d", "Conv1d", "Conv2d", "Dropout", "Embedding", "MaxPool2d",
           "Flatten", "Linear", "LogSoftmax", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "manual_seed",
           "BCELoss", "BCEWithLogitsLoss", "HuberLoss", "SmoothL1Loss", "CrossEntropyLoss", "MSELoss", "NLLLoss",
           "SparseCategoricalCrossentropy", "Module", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Optimizer", "GRU",
           "LSTM", "LastStep", "GradScaler", "Trainer", "eval_step", "predict_step", "train_step", "save", "load", "BatchNorm1d",
           "BatchNorm2d", "LayerNorm",
           "GELU", "SiLU", "LeakyReLU", "ELU", "Softplus", "Hardtanh", "ReLU6", "Identity",
           "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool1d"]
