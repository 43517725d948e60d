package main

func runCreate(args []string) int { return notYet("create") }
