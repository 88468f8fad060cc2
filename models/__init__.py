"""Model builders. Importing this package registers every model."""

from models import conv  # noqa: F401
from models import dense  # noqa: F401
from models import iwae_mlp  # noqa: F401
from models import iwae_mlp2  # noqa: F401
from models import denoising  # noqa: F401
from models import lambda_sampling  # noqa: F401
from models import mlp  # noqa: F401
from models.base import VariationalAutoencoder  # noqa: F401
from models.registry import ModelSpec, get, names  # noqa: F401
