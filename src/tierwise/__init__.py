"""tierwise: send each LLM request to the cheapest model tier that answers it well."""

from tierwise._version import __version__
from tierwise.config import RouterConfig, load_config, parse_config
from tierwise.errors import (
    AllAttemptsFailed,
    ConfigError,
    RequestError,
    TierwiseError,
    UpstreamError,
)
from tierwise.messages import ChatRequest, ChatResponse, Message, Tool, ToolCall, Usage
from tierwise.policy.engine import Completion, Engine, RequestContext, Route

__all__ = [
    "AllAttemptsFailed",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "ConfigError",
    "Engine",
    "Message",
    "RequestContext",
    "RequestError",
    "Route",
    "RouterConfig",
    "TierwiseError",
    "Tool",
    "ToolCall",
    "UpstreamError",
    "Usage",
    "__version__",
    "load_config",
    "parse_config",
]
