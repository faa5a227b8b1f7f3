import os; os.environ.setdefault("OVQUANT_DISABLE_PLUGIN_AUTOLOAD", "1")
