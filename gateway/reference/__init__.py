"""Reference data the rules and checks stand on: the ONS postcode directory, English local authorities, CCIS codes."""
