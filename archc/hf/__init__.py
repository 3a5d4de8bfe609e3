"""The Hugging Face ecosystem (issue #23): `import_hf` reads a transformers checkpoint folder as
an archc spec and its weights (docs/hf.md)."""

from archc.hf.config import HFImportError
from archc.hf.importer import Imported, import_hf, save

__all__ = ["HFImportError", "Imported", "import_hf", "save"]
