"""Reading, formatting and splitting instruction data into the tokenized rows every stage reads."""
