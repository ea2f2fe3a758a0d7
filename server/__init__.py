"""crossgrad's verification core: the request language, the references and the comparison."""
