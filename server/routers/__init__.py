"""One router per resource; each module has ``router() -> APIRouter``."""
