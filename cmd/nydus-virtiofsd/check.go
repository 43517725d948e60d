package main

func runCheck(args []string) int { return notYet("check") }
