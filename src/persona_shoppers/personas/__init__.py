"""Persona families: SimPersona token cards and population recovery; PAARS text personas."""
