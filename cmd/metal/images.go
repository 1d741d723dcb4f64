package main

import "github.com/spf13/cobra"

// imageVerbs are the constructors of the `metal images` subcommands, one
// file each.
var imageVerbs = []func(*app) *cobra.Command{
	newBuildAgentCmd,
	newImagesFetchCmd,
	newImagesGCCmd,
	newImagesImportCmd,
	newImagesListCmd,
	newImagesVerifyCmd,
}

func newImagesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Fetch, verify and cache a site's images; build the install agent",
		Long:  helpText("images"),
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	for _, newSub := range imageVerbs {
		cmd.AddCommand(newSub(a))
	}
	return cmd
}
