"""Front end: source text -> lark parse tree -> AST with source spans."""
