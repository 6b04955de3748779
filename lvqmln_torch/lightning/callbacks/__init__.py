"""Lightning callbacks for the training features of upstream LVQMLN."""

from ._shadow import ShadowWeights, evaluation_state
from .calibration import TemperatureCalibration
from .convergence import LossConvergence
from .ema import ExponentialMovingAverage
from .latent_plot import LatentSpacePlot
from .lookahead import Lookahead
from .patience import PatienceStopping
from .projection import PrototypeProjection
from .restore_best import RestoreBest
from .stall import StallDetection

__all__ = [
    "ExponentialMovingAverage",
    "LatentSpacePlot",
    "Lookahead",
    "LossConvergence",
    "PatienceStopping",
    "PrototypeProjection",
    "RestoreBest",
    "ShadowWeights",
    "StallDetection",
    "TemperatureCalibration",
    "evaluation_state",
]
