"""The flows: parse the inbox material, check each record, route it to its département, build the output file."""
