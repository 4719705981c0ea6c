"""App configuration: the model, its validation, and the file formats it is read from."""
