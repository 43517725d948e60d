package main

func runVirtiofs(args []string) int { return notYet("virtiofs") }
